// terraform-provider-capy: CapyDB's restore points, restores, backups and projects for
// Terraform and OpenTofu, against hosted CapyDB or a self-hosted `capy serve`.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/pulumi-capy/terraform-provider-capy/internal/provider"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run with support for debuggers such as delve")
	flag.Parse()

	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/capy/capy",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
