module bertserve/clients/go

// Built offline against Debian's Go packages (bookworm: golang-go 1.19): generate.sh
// links them into vendor/ (git-ignored) and writes vendor/modules.txt from this file,
// so `go build` runs in -mod=vendor mode and never downloads. The versions below are
// the Debian packages' upstream versions; nothing checks them against a proxy or go.sum.
go 1.19

require (
	// The stubs generate.sh makes from protos/bertserve/v1 (go_package "bertserve/gen/go/bertserve/v1").
	bertserve/gen/go v0.0.0
	github.com/golang/protobuf v1.5.2 // indirect; golang-github-golang-protobuf-1-5-dev
	golang.org/x/net v0.7.0 // indirect; golang-golang-x-net-dev
	golang.org/x/sys v0.3.0 // indirect; golang-golang-x-sys-dev
	golang.org/x/text v0.7.0 // indirect; golang-golang-x-text-dev
	google.golang.org/genproto v0.0.0-20200413115906-b5235f65be36 // golang-google-genproto-dev
	google.golang.org/grpc v1.33.3 // golang-google-grpc-dev
	google.golang.org/protobuf v1.28.1 // golang-google-protobuf-dev
)

replace bertserve/gen/go => ./gen/go
