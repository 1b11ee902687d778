"""ResIP client proxy: SOCKS5 and HTTP CONNECT on localhost, carried over one ResIP session."""
