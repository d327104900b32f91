data "capy_jobs" "recent" {
  project_id = capy_project.app.id
  limit      = 10
}

# result is a JSON string: jsondecode it
output "failed_jobs" {
  value = [for j in data.capy_jobs.recent.jobs : { id = j.id, type = j.type, error = j.error } if j.state == "failed"]
}

output "last_backup_key" {
  value = try([for j in data.capy_jobs.recent.jobs : jsondecode(j.result).backup_key if j.type == "project.backup" && j.state == "completed"][0], null)
}
