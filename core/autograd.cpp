// The backward engine: topological ordering of the recorded graph, gradient accumulation
// per node, accumulation into leaves, and graph release. Each node's backward call is one profiler scope
// "<op>.backward", each gradient accumulation one "accumulate_grad" (runtime/profiler.h).
#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "runtime/profiler.h"

namespace engine {

namespace {
thread_local bool g_grad_enabled = true;
}

bool GradMode::enabled() { return g_grad_enabled; }
void GradMode::set(bool enabled) { g_grad_enabled = enabled; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}
bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->next.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn())
        e.node = in.grad_fn();
      else
        e.leaf = in.impl_ptr();
    }
    node->next.push_back(std::move(e));
    node->input_shapes.push_back(in.defined() ? in.shape() : Shape{});
    if (in.defined() && in.storage())
      node->input_versions.emplace_back(in.storage(), in.storage()->version());
  }
  node->backward = std::move(backward);
  out.set_grad_fn(std::move(node));
}

namespace {
int cuda_index(const Tensor& t) { return t.is_cuda() ? t.device().index : -1; }

// True when t is a contiguous CPU tensor that nothing else can observe: its TensorImpl has no other
// owner (no user handle, no saved value) and its storage no other view. Writing into it in place is then
// invisible to everything but the caller.
bool exclusive(const Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.impl_ptr().use_count() == 1 && t.storage() &&
         t.storage().use_count() == 1 && t.is_contiguous();
}

// acc + g, the same values as add(acc, g) bit for bit (the same a[i] + b[i] in the same operand order), but
// written into acc or g when one of them is exclusive (no new buffer, one pass less over memory), else a
// new tensor. Both are taken by value: the caller moves its handles in, so that use counts are honest.
Tensor sum_grads(Tensor acc, Tensor g) {
  if (acc.dtype() == g.dtype() && acc.device() == g.device()) {
    if (exclusive(acc)) {
      detail::add_into(acc, g, acc);
      return acc;
    }
    if (exclusive(g)) {
      detail::add_into(acc, g, g);
      return g;
    }
  }
  return add(acc, g);
}

void accumulate_leaf(TensorImpl& leaf, const Tensor& g) {
  prof::Scope scope("accumulate_grad", nullptr, cuda_index(g), prof::kNoWork);
  Tensor gd = g.detach().contiguous();
  if (!leaf.grad) {
    // Own the buffer: a gradient may alias a saved tensor or another leaf's grad.
    leaf.grad = (gd.impl_ptr().use_count() > 1 ? gd.clone() : gd).impl_ptr();
  } else {
    // leaf.grad is moved out so that a grad no one else holds is summed in place; a grad the user holds
    // (p.grad()) or that shares its storage is left untouched and replaced by a new sum.
    Tensor acc(std::move(leaf.grad));
    leaf.grad = sum_grads(std::move(acc), std::move(gd)).impl_ptr();
  }
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  ENGINE_CHECK(root.requires_grad(), "backward", "tensor does not require grad and has no grad_fn");
  Tensor g0 = gradient;
  if (!g0.defined()) {
    ENGINE_CHECK(root.numel() == 1, "backward", "implicit gradient only for scalars; output has shape ",
                 shape_str(root.shape()), " (pass a gradient)");
    g0 = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  ENGINE_CHECK(g0.shape() == root.shape(), "backward", "gradient shape ", shape_str(g0.shape()),
               " does not match output shape ", shape_str(root.shape()));
  NoGradGuard no_grad;  // backward computations are not recorded (no higher-order grads)

  if (!root.grad_fn()) {  // a leaf: its gradient is the seed
    accumulate_leaf(*root.impl(), g0);
    return;
  }

  // Iterative DFS for a topological order and dependency counts.
  std::vector<Node*> order;
  std::unordered_map<Node*, int> deps;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{root.grad_fn().get(), 0}};
  visited.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->next.size()) {
      Node* child = n->next[i++].node.get();
      if (child) {
        deps[child]++;
        if (visited.insert(child).second) stack.push_back({child, 0});
      }
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }
  // `order` is post-order (children first); process reversed (root first).
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = g0;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = *it;
    auto git = grads.find(n);
    if (git == grads.end()) continue;  // no gradient flowed here
    Tensor g = std::move(git->second);
    grads.erase(git);
    ENGINE_CHECK(n->backward, "backward", "graph of '", n->name,
                 "' was already released; call backward(..., retain_graph=true) to run it twice");
    for (const auto& [weak, version] : n->input_versions) {
      const std::shared_ptr<Storage> s = weak.lock();
      ENGINE_CHECK(!s || s->version() == version, "backward", "an input of '", n->name,
                   "' was modified in place (copy_, fill_ or an optimizer step) after '", n->name,
                   "' used it (storage version ", s->version(), ", recorded ", version,
                   "): its gradient would use stale values; run the forward pass again after the update, "
                   "or update a clone");
    }
    std::vector<Tensor> in_grads;
    {
      prof::Scope scope(n->name.c_str(), ".backward", cuda_index(g), prof::kNoWork);
      if (scope.traced())
        for (const Shape& s : n->input_shapes) scope.add_shape(s.data(), static_cast<int>(s.size()));
      in_grads = n->backward(g);
    }
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.defined() || i >= in_grads.size() || !in_grads[i].defined()) continue;
      Tensor gi = std::move(in_grads[i]);  // moved: an exclusive gradient can take the sum in place
      ENGINE_CHECK(gi.shape() == n->input_shapes[i], "backward", "op '", n->name,
                   "' produced a gradient of shape ", shape_str(gi.shape()), " for an input of shape ",
                   shape_str(n->input_shapes[i]));
      if (e.leaf) {
        accumulate_leaf(*e.leaf, gi);
      } else {
        auto [slot, inserted] = grads.try_emplace(e.node.get());
        if (inserted) {
          slot->second = std::move(gi);
        } else {
          prof::Scope scope("accumulate_grad", nullptr, cuda_index(gi), prof::kNoWork);
          slot->second = sum_grads(std::move(slot->second), std::move(gi));
        }
      }
    }
    if (!retain_graph) {
      n->backward = nullptr;  // frees saved tensors
    }
  }
  if (!retain_graph) {
    for (Node* n : order) n->next.clear();
  }
}

}  // namespace engine
