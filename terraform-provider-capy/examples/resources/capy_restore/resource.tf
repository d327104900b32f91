variable "project_id" {
  type = string # e.g. capy_project.app.id
}

# Restore a backup into a new preview database, again whenever the migration changes.
resource "capy_restore" "before_migration" {
  project_id   = var.project_id
  backup_key   = "backups/prj_5f2c81d04be97a13/2026-12-01T02-00-00Z.dump"
  preview_name = "before-migration"
  ttl_hours    = 48

  triggers = {
    migration = "0042_add_invoices"
  }

  timeouts {
    create = "30m"
  }
}

# The preview's connection URL (no password) is sensitive.
output "preview_url" {
  value     = capy_restore.before_migration.preview_database_url
  sensitive = true
}

# A moment inside the project's PITR window, into the project itself (a safety backup
# is taken first; an organization-scoped key is needed).
resource "capy_restore" "rollback" {
  project_id                = var.project_id
  restore_time              = "2026-12-01T14:32:00Z"
  target_kind               = "project"
  confirm_project_overwrite = true
}
