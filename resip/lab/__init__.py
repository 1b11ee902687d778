"""Real ResIP processes in the impaired-link lab: the process launcher and the relay."""
