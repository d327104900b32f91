terraform {
  required_providers {
    capy = {
      source = "capy/capy"
    }
  }
}

# With CAPYDB_API_URL and CAPYDB_API_KEY set, the block can stay empty: the key then
# never sits in a file. For a self-hosted `capy serve` on a laptop:
#   export CAPYDB_API_URL=http://127.0.0.1:8080 CAPYDB_API_KEY=capy_live_…
provider "capy" {}

# Or explicitly (the key from a sensitive variable, e.g. TF_VAR_capy_api_key):
# provider "capy" {
#   api_url = "https://capy.internal:8080"
#   api_key = var.capy_api_key
# }
