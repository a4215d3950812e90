"""Test harness: real nats-server and SecantusDB processes on free ports, and fixtures."""
