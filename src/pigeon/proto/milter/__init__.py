"""The milter protocol (Sendmail's libmilter, version 6 as Postfix speaks it), sans IO.

``codec`` turns the MTA's commands into octets and the filter's octets into typed responses;
``pigeon.inbound.milter`` does the talking.
"""
