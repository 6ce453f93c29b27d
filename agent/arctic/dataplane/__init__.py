"""The TCP data plane: TPROXY interception, signed tunnel streams between peers, re-origination at the target.

Runs as its own process (``python -m arctic.dataplane --config FILE``) so the control plane can restart without
cutting live connections. Map of the package:

* ``config``    - the JSON config the agent renders (validated dataclasses, bad keys named);
* ``header``    - the signed, versioned stream header and the 1-byte verdict codes;
* ``replay``    - bounded nonce memory against replayed headers;
* ``admission`` - the target's ordered checks (who signed, when, which service, where to);
* ``tls``       - TLS 1.3 contexts bound to the peers' Ed25519 identity keys;
* ``channels``  - the tunnel connection, plaintext or TLS over memory BIOs;
* ``relay``     - two-way byte moving (``os.splice`` or large-buffer TLS) with half-close and reset semantics;
* ``netsock``   - socket recipes (TPROXY listener, transparent connect, RST close);
* ``slots``     - which QoS flow slot (``SO_PRIORITY``) a new tunnel connection takes;
* ``engine``    - listeners, source and target handling, live reload, drain;
* ``stats``     - the counters file the agent and tests read (also per service: which one carried what).

The agent starts it through ``arctic.daemon.dataplane_supervisor`` and renders its config in
``arctic.netconf.rendering``.
"""
