"""Files: the upload pipeline's steps (pipeline), the work a file is owed
(owed), and the sweeps and requeues that maintenance runs (sweeps, requeue)."""
