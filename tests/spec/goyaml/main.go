package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

type T struct {
	S *string `json:"s"`
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	out := map[string]interface{}{}
	for sc.Scan() {
		in := sc.Text()
		var t T
		err := yaml.Unmarshal([]byte("s: "+in+"\n"), &t)
		if err != nil {
			out[in] = map[string]string{"error": err.Error()}
		} else if t.S == nil {
			out[in] = nil
		} else {
			out[in] = *t.S
		}
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
}
