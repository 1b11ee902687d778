"""Terminal rendering shared by the status views (rich is imported only here and in the CLIs)."""
