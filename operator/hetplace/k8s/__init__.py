"""The only code that talks to the Kubernetes API: apply, prune, inventory and status (status.py
builds the status document; the API calls come with the controller)."""
