"""The web console: its static files (static/) and the gRPC service that serves them."""
