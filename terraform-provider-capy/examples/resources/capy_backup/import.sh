# PROJECT_ID/BACKUP_ID
tofu import capy_backup.nightly prj_5f2c81d04be97a13/bk_0a1b2c3d4e5f6a7b
