data "capy_backups" "app" {
  project_id = capy_project.app.id
}

output "verified_backup_keys" {
  value = [for b in data.capy_backups.app.backups : b.backup_key if b.verification_state == "verified"]
}
