# The quickstart (examples/quickstart) in HCL: protect a SQLite app database, pin a
# restore point, restore it into a preview. Against a `capy serve` (or hosted CapyDB
# for the restore point and restore; it refuses capy_project), reached through
# CAPYDB_API_URL and CAPYDB_API_KEY. `./run` does it all on loopback; README.md here.

terraform {
  required_providers {
    capy = {
      source = "capy/capy"
    }
  }
}

# api_url and api_key come from CAPYDB_API_URL and CAPYDB_API_KEY: keep the key out of
# .tf files (api_key is sensitive and never written to state, but files get committed).
provider "capy" {}

variable "database_path" {
  description = "Absolute path of the SQLite app database to protect (the server opens it: same machine)."
  type        = string

  validation {
    condition     = startswith(var.database_path, "/")
    error_message = "database_path must be an absolute path (the server resolves it, not this directory)."
  }
}

variable "name" {
  description = "The project's name on the server."
  type        = string
  default     = "quickstart-terraform"
}

variable "label" {
  description = "The restore point's label; a new label is a new restore point (a fresh backup)."
  type        = string
  default     = "before-change"
}

variable "restore_trigger" {
  description = "Change it to run the restore again (into a new preview)."
  type        = string
  default     = "1"
}

variable "force_destroy" {
  description = "Let `tofu destroy` remove the project's backups too; without it destroy refuses to remove a project that has backups."
  type        = bool
  default     = false
}

resource "capy_project" "app" {
  name          = var.name
  database_url  = "sqlite:///${var.database_path}"
  force_destroy = var.force_destroy
}

# a fresh backup of the app database, verified and pinned
resource "capy_restore_point" "before_change" {
  project_id = capy_project.app.id
  label      = var.label
}

# that state, restored into a new preview database
resource "capy_restore" "inspect" {
  project_id       = capy_project.app.id
  restore_point_id = capy_restore_point.before_change.id
  preview_name     = "${var.name}-inspect"
  ttl_hours        = 24
  triggers = {
    restore = var.restore_trigger
  }

  timeouts {
    create = "10m"
  }
}

output "project_id" {
  value = capy_project.app.id
}

output "restore_point_id" {
  value = capy_restore_point.before_change.id
}

output "restore_point_state" {
  value = capy_restore_point.before_change.state
}

output "backup_key" {
  value = capy_restore_point.before_change.backup_key
}

output "restore_state" {
  value = capy_restore.inspect.state
}

output "preview_database_id" {
  value = capy_restore.inspect.preview_database_id
}

# a SQLite preview is a file: sqlite3 "$(tofu output -raw preview_path)" 'select * from customers'
output "preview_path" {
  value = capy_restore.inspect.preview_database_name
}

output "preview_state" {
  value = capy_restore.inspect.preview_state
}
