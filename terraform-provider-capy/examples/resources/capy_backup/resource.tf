# A verified backup of the project's database.
resource "capy_backup" "nightly" {
  project_id = capy_project.app.id
  label      = "nightly"
}
