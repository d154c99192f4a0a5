"""Test support shared by the black-box suites: scripted peers, raw client, process control."""
