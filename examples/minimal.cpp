// The smallest C++ use of libflexrun: load a model, open a session, stream a greedy answer.
//
//   c++ -std=c++17 examples/minimal.cpp $(pkg-config --cflags --libs flexrun) -o minimal
//   ./minimal MODEL.gguf "The capital of France is" [MAX_TOKENS]
//
// The handles go into std::unique_ptr with the library's free functions as deleters, and a
// lambda is the token callback (a captureless lambda converts to the C function pointer; the
// state travels through user_data).
#include <flexrun.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

using Model = std::unique_ptr<flexrun_model, decltype(&flexrun_model_free)>;
using Session = std::unique_ptr<flexrun_session, decltype(&flexrun_session_free)>;

int main(int argc, char **argv) {
    if (argc < 3) {
        std::cerr << "usage: " << argv[0] << " MODEL.gguf PROMPT [MAX_TOKENS]\n";
        return 2;
    }
    flexrun_model *m = nullptr;
    if (flexrun_model_load(argv[1], flexrun_model_default_params(), &m) != FLEXRUN_OK) {
        std::cerr << "minimal: " << flexrun_last_error() << "\n";
        return 1;
    }
    Model model(m, &flexrun_model_free);

    flexrun_session *s = nullptr;
    if (flexrun_session_create(model.get(), flexrun_session_default_params(), &s) != FLEXRUN_OK) {
        std::cerr << "minimal: " << flexrun_last_error() << "\n";
        return 1;
    }
    Session session(s, &flexrun_session_free);

    flexrun_generate_params params = flexrun_generate_default_params();
    params.temperature = 0;  // greedy: the same text as `flexrun --temp 0`
    params.max_tokens = argc > 3 ? std::atoi(argv[3]) : 32;

    std::string text;
    auto on_token = [](flexrun_token, const char *piece, size_t len, void *user) -> bool {
        static_cast<std::string *>(user)->append(piece, len);
        std::cout.write(piece, static_cast<std::streamsize>(len)).flush();
        return true;
    };
    flexrun_stats stats{};
    if (flexrun_generate(session.get(), argv[2], params, on_token, &text, &stats) != FLEXRUN_OK) {
        std::cerr << "\nminimal: " << flexrun_last_error() << "\n";
        return 1;
    }
    std::cout << "\n";
    std::cerr << "minimal: " << stats.generated_tokens << " tokens, " << stats.decode_tokens_per_second << " tok/s\n";
    return 0;
}
