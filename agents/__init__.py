"""Agents and reference policies (installed as ``mmrl.agents``)."""
