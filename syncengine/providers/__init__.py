"""Mailbox providers: the engine's view of Exmail, one implementation per API generation."""
