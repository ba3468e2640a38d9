// Two unrelated processes talk through a FIFO:
//   fifo_messenger read PATH    creates the FIFO, waits for one message, removes it
//   fifo_messenger write PATH   writes one message to it
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <tether/channel.hpp>

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 3) {
    std::fprintf(stderr, "usage: fifo_messenger read|write PATH\n");
    return 2;
  }
  std::string mode = argv[1], path = argv[2];
  if (mode == "read") {
    auto fifo = tether::Fifo::create(path);  // owns it: removed when we are done
    if (!fifo) return std::fprintf(stderr, "%s\n", fifo.error().message().c_str()), 1;
    auto reader = fifo->open_reader();  // waits for a writer, as open(2) does
    auto text = reader->read_all(30s);
    if (!text) return std::fprintf(stderr, "%s\n", text.error().message().c_str()), 1;
    std::printf("I pid %d received a message => %s\n", getpid(), text->c_str());
    return 0;
  }
  auto fifo = tether::Fifo::attach(path);
  if (!fifo) return std::fprintf(stderr, "%s\n", fifo.error().message().c_str()), 1;
  auto writer = fifo->open_writer(30s);  // waits for the reader
  if (!writer) return std::fprintf(stderr, "%s\n", writer.error().message().c_str()), 1;
  writer->write_all("Hello from pid " + std::to_string(getpid())).value();
  return 0;
}
