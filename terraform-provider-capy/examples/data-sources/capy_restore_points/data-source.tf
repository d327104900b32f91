data "capy_restore_points" "app" {
  project_id = capy_project.app.id
}

output "active_restore_points" {
  value = [for p in data.capy_restore_points.app.restore_points : p.label if p.state == "active"]
}
