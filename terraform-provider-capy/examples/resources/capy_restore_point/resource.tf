# A restore point before a migration: takes a fresh backup, waits until it is verified,
# and pins it under the label.
resource "capy_restore_point" "before_migration" {
  project_id = capy_project.app.id
  label      = "before-migration-42"
  note       = "schema change of the orders table"
}

# A restore point pinned to a backup taken earlier.
resource "capy_restore_point" "nightly" {
  project_id = capy_project.app.id
  label      = "nightly"
  backup_key = capy_backup.nightly.backup_key
}

# With point-in-time recovery on: a moment of the PITR window.
resource "capy_restore_point" "before_incident" {
  project_id = capy_project.app.id
  label      = "before-incident"
  kind       = "pitr"
  pitr_time  = "2026-01-31T09:30:00Z"
}
