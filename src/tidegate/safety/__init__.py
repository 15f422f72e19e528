"""Content-safety gates: policies of input and output checks applied at the gateway's edge.

``gates.SafetyGates`` resolves the policies of a request (its model's and its tenant's) into a
``RequestGate``: the input checks run before the request is counted, limited or routed; the
output checks run on a whole answer, or on a stream's sliding window (``stream``). Every
decision is counted (``metrics``); a refusal is a ``ContentPolicyError`` naming the policy and
the check, never the text.
"""
