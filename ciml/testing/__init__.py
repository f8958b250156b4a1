"""Public testing kit for plugin authors: local servers, conformance checks, fixtures."""
