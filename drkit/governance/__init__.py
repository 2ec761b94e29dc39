"""Governed runs: four-eyes approvals, blackout windows, and a findings register."""
