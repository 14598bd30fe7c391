"""What happens around a job besides training: W&B runs, webhooks and e-mail (through one outbox)."""
