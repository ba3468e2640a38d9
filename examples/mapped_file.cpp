// A regular file mapped shared by two processes: what one writes into its
// mapping, the other reads in its own mapping of the same file at once, and
// msync puts it in the file on disk.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <tether/tether.hpp>

namespace {

int failed(const tether::Error& e) {
  std::fprintf(stderr, "%s\n", e.message().c_str());
  return 1;
}

// The file's layout, the same in every process that maps it.
struct Page {
  char note[128];
  char reply[128];
};

int run(const std::filesystem::path& path) {
  using namespace std::chrono_literals;
  // Owned: the file is removed when `file` goes, whatever happens below.
  auto file = tether::MappedFile::create(path, sizeof(Page));
  if (!file) return failed(file.error());
  auto map = file->map();
  if (!map) return failed(map.error());
  auto page = map->construct<Page>();
  if (!page) return failed(page.error());
  std::snprintf((*page)->note, sizeof(Page::note), "hello from the writer, pid %d", getpid());
  if (auto ok = map->sync(); !ok) return failed(ok.error());

  auto child = tether::fork([&path] {
    // A mapping of its own, from the path alone, as an unrelated process
    // would make (the parent's mapping is inherited too, but not used).
    auto mine = tether::MappedFile::open(path);
    if (!mine) return failed(mine.error());
    auto m = mine->map();
    if (!m) return failed(m.error());
    auto p = m->view<Page>();
    if (!p) return failed(p.error());
    std::printf("reader read: %s\n", (*p)->note);
    std::snprintf((*p)->reply, sizeof(Page::reply), "thanks, from the reader, pid %d", getpid());
    if (auto ok = m->sync(); !ok) return failed(ok.error());
    return 0;
  });
  if (!child) return failed(child.error());
  auto status = child->wait(10s);
  if (!status) return failed(status.error());
  std::printf("reader %s\n", status->describe().c_str());
  // No copying: the reader's write is in our mapping already...
  std::printf("writer read: %s\n", (*page)->reply);
  // ...and in the file, for read(2). (read(2) sees the page cache, as the
  // mapping does; msync is what makes it survive a crash of the machine.)
  std::ifstream in(path, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::printf("the file holds the reply: %s\n",
              bytes.find("thanks, from the reader") != std::string::npos ? "yes" : "no");
  if (auto ok = file->remove(); !ok) return failed(ok.error());
  return status->success() ? 0 : 1;
}

}  // namespace

int main() {
  char dir[] = "/tmp/tether-mapped-file-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  int code = run(std::filesystem::path(dir) / "page");
  std::error_code ec;
  std::filesystem::remove(dir, ec);  // empty by now: run() removed the file
  if (ec) {
    std::fprintf(stderr, "remove %s: %s\n", dir, ec.message().c_str());
    return 1;
  }
  std::printf("nothing left behind: %s\n", std::filesystem::exists(dir, ec) ? "no" : "yes");
  return code;
}
