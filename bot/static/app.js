// Copy buttons: <button data-copy="<id of a textarea>">. No inline scripts (the CSP forbids them).
document.querySelectorAll("[data-copy]").forEach(function (button) {
  button.addEventListener("click", function () {
    var source = document.getElementById(button.dataset.copy);
    var status = document.getElementById("copy-status");
    function done(text) { if (status) { status.textContent = text; } }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.value).then(function () { done("Copied."); },
                                                       function () { source.select(); done("Press Ctrl+C to copy."); });
    } else {
      source.select();
      done(document.execCommand("copy") ? "Copied." : "Press Ctrl+C to copy.");
    }
  });
});
