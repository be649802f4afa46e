"""local-up.sh and local-down.sh where no stack is needed: a taken port, nothing to stop."""

import os
import socket


def test_up_refuses_a_port_taken_by_another_program(new_stack):
    # Given something that is not our emulator listening on the emulator's port
    with socket.create_server(("127.0.0.1", new_stack.emulator_port)):
        # When the stack is brought up
        up = new_stack.up()

    # Then it fails, saying which port and what to do, and starts nothing
    assert up.returncode != 0
    assert f"port {new_stack.emulator_port} on 127.0.0.1 is taken by another program" in up.stderr
    assert "EMULATOR_PORT" in up.stderr
    assert new_stack.pids() == {}


def test_down_with_nothing_up_says_so(new_stack):
    down = new_stack.script("local-down.sh")

    assert down.returncode == 0, down.stderr
    assert "nothing is up" in down.stdout


def test_down_leaves_a_process_alone_whose_pid_was_reused(new_stack):
    # Given a pid file naming a process that local-up.sh did not start (this test's own)
    new_stack.run_dir.mkdir(parents=True)
    (new_stack.run_dir / "consumer-1.pid").write_text(f"{os.getpid()}\n")

    down = new_stack.script("local-down.sh")

    assert down.returncode == 0, down.stderr
    assert f"consumer-1 (pid {os.getpid()}) was not running" in down.stderr
    assert not (new_stack.run_dir / "consumer-1.pid").exists()
