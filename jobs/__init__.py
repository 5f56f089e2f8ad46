"""Fine-tuning jobs: users' text turned into served models.

- jobs/store.py   files, jobs and events in SQLite (+ the files on disk); shared by the web workers
                  (which only record uploads and requests: service/ never trains) and the trainer;
- jobs/upload.py  what an uploaded file must be (UTF-8 text, or JSONL of text / prompt+completion);
- jobs/runner.py  the trainer: its own process (`python -m jobs.runner`) that runs queued jobs with
                  the offline module (`python -m model.train`, one child process per job, at a lower
                  priority), turns its metrics into events, resumes jobs after a crash, and publishes
                  each result into the models directory, where every replica's registry finds it.
"""
