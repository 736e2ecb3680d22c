// Package applicationpkg holds the one message of argo-cd's pkg/apiclient/application that
// util/lua reads (ResourceActionParameters: an action's parameters), with the two generated
// getters it calls, copied from argo-cd v3.5.7's application.pb.go (Apache-2.0, Copyright The
// Argo Authors). The protobuf bookkeeping fields are left out: util/lua never touches them.
package applicationpkg

type ResourceActionParameters struct {
	Name  *string `protobuf:"bytes,1,req,name=name" json:"name,omitempty"`
	Value *string `protobuf:"bytes,2,req,name=value" json:"value,omitempty"`
}

func (m *ResourceActionParameters) GetName() string {
	if m != nil && m.Name != nil {
		return *m.Name
	}
	return ""
}

func (m *ResourceActionParameters) GetValue() string {
	if m != nil && m.Value != nil {
		return *m.Value
	}
	return ""
}
