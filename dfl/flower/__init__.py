"""Flower apps: the same dfl experiment on Flower's Simulation or Deployment runtime.

``flwr run .`` (pyproject's [tool.flwr.app]) loads dfl.flower.server_app:app and
dfl.flower.client_app:app. Importing this package does not import flwr; the modules do.
"""
