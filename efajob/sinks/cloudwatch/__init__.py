"""The CloudWatch sink and its pure parts: limits, metric catalogue, EMF job events, spool,
dashboard body, cost estimate, and the one module that imports boto3 (client.py)."""
