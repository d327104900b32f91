package provider

// The acceptance-test framework, pinned in go.mod before its first use.
import _ "github.com/hashicorp/terraform-plugin-testing/helper/resource"
