"""The job processes: the worker loop (`worker`), the per-job child (`runner`), its DB reporter
(`reporter`) and the queue on the jobs table (`queue`). They use `services/` and `domain/`;
nothing below them imports them."""
