/* estafeta: command dispatch. Each subcommand lives in its own file. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    puts("estafeta: under construction");
    return 0;
}
