"""Small processors, one per execute mode. Run them with ``sx-worker run examples.hello`` and so on."""
