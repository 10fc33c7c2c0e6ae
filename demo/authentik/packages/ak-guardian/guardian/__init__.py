"""Workspace package fixture."""
