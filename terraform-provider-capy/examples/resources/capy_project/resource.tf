# A database a self-hosted `capy serve` protects (hosted CapyDB makes projects itself).
variable "app_database_url" {
  type      = string
  sensitive = true # e.g. TF_VAR_app_database_url=postgresql://app:…@db:5432/app
}

resource "capy_project" "app" {
  name          = "app"
  database_url  = var.app_database_url
  environment   = "production"
  pitr          = true  # needs a worker streaming the log: capy serve --workers 1
  force_destroy = false # destroy is refused while backups exist
}
