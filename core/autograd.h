// Reverse-mode autograd over a dynamic graph. Each differentiable op that sees an input
// requiring grad records a Node: edges to its inputs' nodes (or leaf tensors), and a
// backward closure that holds the tensors it saved. backward() runs the nodes in reverse
// topological order, accumulates into leaves' .grad, then releases the graph.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace engine {

struct Edge {
  std::shared_ptr<Node> node;        // the producer's node, or
  std::shared_ptr<TensorImpl> leaf;  // a leaf that requires grad (accumulate into .grad)
  bool defined() const { return node || leaf; }
};

struct Node {
  std::string name;                 // op name, for errors and debugging
  std::vector<Edge> next;           // one per differentiable input (may be undefined)
  std::vector<Shape> input_shapes;  // expected gradient shapes, checked
  // grad of the output -> grads of the inputs (undefined where not needed / not differentiable).
  std::function<std::vector<Tensor>(const Tensor&)> backward;
  // Storage versions of the inputs when the op ran; backward throws if one changed (an in-place update of
  // a tensor the op may have saved). Weak: a freed storage cannot have been saved.
  std::vector<std::pair<std::weak_ptr<Storage>, uint64_t>> input_versions;
  bool needs(size_t i) const { return i < next.size() && next[i].defined(); }
};

// Global (thread-local) switch: when disabled, ops record nothing.
struct GradMode {
  static bool enabled();
  static void set(bool enabled);
};
class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::enabled()) { GradMode::set(false); }
  ~NoGradGuard() { GradMode::set(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and any input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `out` when recording is needed. `inputs` are the differentiable inputs
// in the order the backward closure returns their gradients.
//
// In-place rule: a tensor used as an op's input must not be updated in place (copy_, fill_, an optimizer
// step) before that op's backward has run; backward checks the inputs' storage versions and throws
// engine::Error naming the op if one changed (conservative: also for ops that did not save that input).
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward);

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

}  // namespace engine
