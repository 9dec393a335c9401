"""Tests of the embedded services, configuration and the services command."""
