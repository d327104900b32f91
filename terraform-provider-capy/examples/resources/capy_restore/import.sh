# A completed restore job, as PROJECT_ID/JOB_ID. What the server keeps no record of
# (triggers, recreate, allow_unverified_backup) is recorded from the configuration by
# the first apply, without restoring again.
tofu import capy_restore.before_migration prj_5f2c81d04be97a13/job_0b4f7c2e9a1d3e58
