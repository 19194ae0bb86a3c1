"""Deployment: batch and streaming scoring, drift monitoring."""
