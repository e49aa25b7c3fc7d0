"""The sample microservice app the harness deploys ("shop")."""
