package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/regd/regd/client"
)

// A service instance registers itself, stays registered while it runs,
// and deregisters when it stops.
func ExampleRegistrar() {
	cfg := client.Config{
		Addrs:  []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		// A write token, when regd runs with --auth-token-file.
		Token: os.Getenv("REGD_TOKEN"),
	}
	reg := client.NewRegistrar(cfg, "user", "user-1", "10.0.0.5:9000", client.RegistrarOptions{
		TTL:      10,
		Metadata: map[string]string{"zone": "a", "version": "1.4.2"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := reg.Start(ctx); err != nil {
		log.Fatalf("register: %v", err)
	}
	fmt.Println("registered with lease", reg.Instance().LeaseID)

	// ... serve until told to stop ...

	closeCtx, cancelClose := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelClose()
	if err := reg.Close(closeCtx); err != nil {
		log.Printf("deregister: %v", err)
	}
}

// A consumer follows a service and spreads its calls over the instances.
func ExampleDiscovery() {
	d := client.NewDiscovery(client.Config{Addrs: []string{"127.0.0.1:8080", "127.0.0.1:8081"}}, "user")
	d.OnRegister(func(in client.Instance) {
		fmt.Printf("up: %s at %s (revision %d)\n", in.ID, in.Address, in.Revision)
	})
	d.OnDeregister(func(in client.Instance, reason string) {
		fmt.Printf("down: %s (%s)\n", in.ID, reason)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		log.Fatalf("discover: %v", err)
	}
	defer d.Close()

	for range 3 {
		in, ok := d.Pick()
		if !ok {
			fmt.Println("no instance of user is up")
			break
		}
		fmt.Println("calling", in.Address)
	}
	fmt.Println(len(d.Instances()), "instances at revision", d.Revision())
}

// A deploy script drains an instance, waits until every client has seen
// it, and then stops the process: no guessed sleep.
func ExampleClient_SetStatus() {
	cl := client.New(client.Config{Addrs: []string{"127.0.0.1:8080"}, Token: os.Getenv("REGD_TOKEN")})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	_, obs, err := cl.SetStatus(ctx, "user", "user-1", client.StatusDraining, 30*time.Second)
	if err != nil {
		log.Fatalf("drain: %v", err)
	}
	if !obs.Complete() {
		log.Printf("drained, but only %s had seen it within 30s", obs)
	}
	// ... stop user-1 ...
}

// An agent renews the instances it keeps in one request.
func ExampleClient_Heartbeats() {
	cl := client.New(client.Config{Addrs: []string{"127.0.0.1:8080"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.Heartbeats(ctx, []client.InstanceRef{{Service: "user", ID: "user-1"}, {Service: "user", ID: "user-2"}})
	if err != nil {
		log.Fatalf("heartbeats: %v", err)
	}
	for _, r := range res {
		if client.IsNotFound(r.Err) {
			fmt.Println(r.ID, "expired: register it again")
		}
	}
}
