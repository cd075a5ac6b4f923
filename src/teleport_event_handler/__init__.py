"""Export Teleport's audit log to Fluentd over mutual TLS."""

__version__ = "0.1.0"
