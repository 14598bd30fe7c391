"""The job domain rules, shared by the services (API side) and the job processes (worker side):
the state machine (`states`), the event messages (`events`) and fine-tuned model names
(`naming`). Pure rules over store rows: no processes, no HTTP, no training."""
