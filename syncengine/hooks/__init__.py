"""The HR webhook receiver (``syncengine serve``), its worker, single sign-on links for the OA
portal and new-mail forwarding.

The parts are kept apart on purpose: :mod:`.signing`, :mod:`.payloads` and :mod:`.guard` are
pure (checking a request, validating and folding events, what a hook or a portal link may
reach), :mod:`.app` is the Starlette app (it stores events and answers; it never calls
Exmail), :mod:`.server` holds the uvicorn settings that cut off slow clients, :mod:`.worker`
turns stored events into targeted syncs through callables the service hands it,
:mod:`.metrics` renders the Prometheus text and :mod:`.forward` posts signed new-mail events.
Only :mod:`syncengine.service` wires them to the staging database and the Exmail provider.
"""
