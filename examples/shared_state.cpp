// The reference material's Value, Array and dict example, without a server
// process: two processes update shared data under a lock (and one counter
// with no lock at all), and the result shows both processes' updates.
#include <cstdio>
#include <string>

#include <tether/tether.hpp>

namespace {
int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}
}  // namespace

int main() {
  auto num = tether::Value<double>::anonymous(0.0);
  auto arr = tether::Array<int>::anonymous(5, 0);
  auto hits = tether::Value<long>::anonymous(0);
  auto dict = tether::Dict::anonymous();
  if (!num) return failed(num.error());
  if (!arr) return failed(arr.error());
  if (!hits) return failed(hits.error());
  if (!dict) return failed(dict.error());
  auto work = [&](int who) {
    for (int i = 0; i < 1000; ++i) {
      {
        auto g = num->lock();  // Python: with num.get_lock(): num.value += 0.5
        if (!g) return 2;
        *num->get() += 0.5;
      }
      {
        auto g = arr->lock();
        if (!g) return 2;
        for (int& x : arr->span()) x += 1;
      }
      hits->fetch_add(1);  // atomic: no lock needed
      if (!dict->update_value<int>("updates", [](int& n) { ++n; })) return 3;
    }
    return dict->set("by " + std::to_string(who), "done") ? 0 : 4;
  };
  auto child = tether::fork([&] { return work(1); });
  if (!child) return failed(child.error());
  int mine = work(0);
  auto status = child->wait();
  if (!status) return failed(status.error());
  std::printf("child %s, parent's share returned %d\n", status->describe().c_str(), mine);
  std::printf("num = %.1f\n", *num->load());
  auto all = arr->snapshot();
  if (!all) return failed(all.error());
  std::printf("arr = [%d, %d, %d, %d, %d]\n", (*all)[0], (*all)[1], (*all)[2], (*all)[3],
              (*all)[4]);
  std::printf("hits = %ld\n", *hits->load());
  std::printf("dict: updates = %d, by 0 = %s, by 1 = %s\n", *dict->get_value<int>("updates"),
              dict->get("by 0")->c_str(), dict->get("by 1")->c_str());
  return 0;
}
