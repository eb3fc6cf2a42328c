"""Dobby: the orchestrator daemon (`pt dobby ...`). See docs/dobby.md.

    cli.py      the `pt dobby` commands and `request()`, the one-request client the CLI uses
    client.py   `try_dobby()`: the hook by which `pt query/context/ingest/run fix` use a running Dobby
    daemon.py   the JSON-RPC methods, the writer thread, serve / shutdown
    pools.py    CPU and LLM worker pools as Ray actors, the memory guard
    workers.py  what the workers do
    rpc.py      JSON-RPC 2.0 on a Unix socket (pygls's protocol)
    config.py   environment and defaults
"""
