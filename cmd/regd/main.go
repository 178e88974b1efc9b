// Command regd is a self-contained service registry: an embedded etcd member
// plus a REST API. See README.md.
package main

func main() {}
