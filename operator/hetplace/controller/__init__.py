"""The operator's control loop: thin kopf handlers around pure steps (moves.py is the first)."""
