// Command resolverclient is meshkit's check that a Go gRPC client using etcd's own
// resolver (go.etcd.io/etcd/clientv3/naming/resolver) routes only to the instances
// that meshkit's registry has registered.
//
// It dials etcd:///<prefix>/<service> through that resolver with the round_robin
// balancer and calls /meshkit.test.Hello/Say (request and reply are
// google.protobuf.StringValue, so no generated code of ours is needed) every -interval
// until -duration has passed or stdin is closed. It prints one line per call:
//
//	ok <seq> <reply> <peer-address>
//	err <seq> <grpc-code> <message>
//
// The backends answer with their own name, so the test sees which backend answered.
//
// With -marshal it instead reads lines [addr, {meshkit fields}] (JSON) on stdin and
// prints, for each, what Go's encoding/json writes for the registry's value struct
// (etcd's internal.Update fields, then meshkit's), so the test can compare meshkit's
// encoder with Go's byte for byte.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang/protobuf/ptypes/wrappers"
	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const method = "/meshkit.test.Hello/Say"

// value is the registry's value as Go declares it: etcd's endpoints/internal.Update
// (Op, Addr, Metadata) and meshkit's fields after them.
type value struct {
	Op       uint8
	Addr     string
	Metadata interface{}
	Meshkit  map[string]interface{}
}

func marshalLines() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		dec := json.NewDecoder(bytes.NewReader(in.Bytes()))
		dec.UseNumber() // keep integers as written
		var line []interface{}
		if err := dec.Decode(&line); err != nil {
			return err
		}
		if len(line) != 2 {
			return fmt.Errorf("want [addr, fields], got %d items", len(line))
		}
		addr, _ := line[0].(string)
		fields, _ := line[1].(map[string]interface{})
		b, err := json.Marshal(value{Op: 0, Addr: addr, Metadata: nil, Meshkit: fields})
		if err != nil {
			return err
		}
		out.Write(b)
		out.WriteByte('\n')
	}
	return in.Err()
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	target := flag.String("target", "etcd:///meshkit/services/hello", "gRPC target resolved through etcd")
	interval := flag.Duration("interval", 20*time.Millisecond, "time between calls")
	duration := flag.Duration("duration", 60*time.Second, "stop after this long (a bound for tests)")
	callTimeout := flag.Duration("call-timeout", time.Second, "limit of one call")
	marshal := flag.Bool("marshal", false, "print Go's encoding of values read on stdin, then exit")
	flag.Parse()
	if *marshal {
		if err := marshalLines(); err != nil {
			fmt.Fprintln(os.Stderr, "marshal:", err)
			os.Exit(1)
		}
		return
	}

	// A quiet etcd client logger: the calls' lines are the output.
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	logCfg.OutputPaths = []string{"stderr"}
	logCfg.ErrorOutputPaths = []string{"stderr"}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
		LogConfig:   &logCfg,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd client:", err)
		os.Exit(1)
	}
	defer cli.Close()

	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		fmt.Fprintln(os.Stderr, "resolver:", err)
		os.Exit(1)
	}
	conn, err := grpc.Dial(*target,
		grpc.WithInsecure(),
		grpc.WithResolvers(builder),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()

	// Closing stdin stops the client early (the test's way to end it cleanly).
	stop := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(stop)
	}()

	out := bufio.NewWriter(os.Stdout)
	deadline := time.After(*duration)
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	fmt.Fprintf(out, "started %s\n", *target)
	out.Flush()
	for seq := 1; ; seq++ {
		ctx, cancel := context.WithTimeout(context.Background(), *callTimeout)
		var p peer.Peer
		reply := &wrappers.StringValue{}
		err := conn.Invoke(ctx, method, &wrappers.StringValue{Value: fmt.Sprintf("call-%d", seq)}, reply, grpc.Peer(&p))
		cancel()
		if err != nil {
			st := status.Convert(err)
			fmt.Fprintf(out, "err %d %s %q\n", seq, st.Code(), st.Message())
		} else {
			addr := "-"
			if p.Addr != nil {
				addr = p.Addr.String()
			}
			fmt.Fprintf(out, "ok %d %s %s\n", seq, reply.GetValue(), addr)
		}
		out.Flush()
		select {
		case <-stop:
			return
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}
