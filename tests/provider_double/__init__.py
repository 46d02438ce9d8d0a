"""The provider API test double (see server.py); run it with ``python -m tests.provider_double``."""
